import type { Command } from 'commander';
import { Engine } from '../engine/engine.js';
import { readSafetensors, writeSafetensors } from '../tensor/safetensors.js';
import { castTensor } from '../tensor/half.js';
import type { HostTensor } from '../tensor/tensor.js';

/** One model evaluation on given tensors: for checking a conversion against another implementation. */
export function registerForward(program: Command): void {
  program
    .command('forward')
    .description('run one model evaluation: x [B,C,H,W], t [B], y [B] (or caption embeddings) -> out [B,C_out,H,W]')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .requiredOption('--inputs <file>', 'safetensors with x, t and y (or encoder_hidden_states [B,L,C] of any length L, encoder_attention_mask [B,L] of any int, bool or float type)')
    .requiredOption('--out <file>', 'safetensors to write, with tensor "out"')
    .action(async (o: { model: string; inputs: string; out: string }) => {
      const engine = await Engine.open(o.model);
      const inputs: Record<string, HostTensor> = {};
      for (const [name, t] of await readSafetensors(o.inputs)) {
        const float = t.dtype === 'float16' || t.dtype === 'bfloat16' || t.dtype === 'float64';
        inputs[name] = float ? castTensor(t, 'float32') : t;
      }
      const out = await engine.forward(inputs);
      await writeSafetensors(o.out, { out }, { model: engine.id, sha256: engine.pkg.sha256 });
      process.stderr.write(`wrote ${o.out}: out [${out.shape}]\n`);
    });
}
