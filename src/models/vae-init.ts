import { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import type { VaeConfig } from './vae.js';

/**
 * Random decoder weights in the diffusers AutoencoderKL key layout (plus two encoder keys,
 * as a full file holds the encoder, which the decoder leaves alone): for tests and the
 * real-size benchmark. Convolutions ~ N(0, 1/fan_in), norm affines away from (1, 0).
 */
export function initVaeWeights(cfg: VaeConfig, seed: number): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const ckpt = new Map<string, HostTensor>();
  const normal = (name: string, shape: number[], mean: number, std: number) =>
    ckpt.set(name, tensor('float32', shape, rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)), mean, std)));
  const conv = (name: string, cout: number, cin: number, k: number) => {
    normal(`${name}.weight`, [cout, cin, k, k], 0, 1 / Math.sqrt(cin * k * k));
    normal(`${name}.bias`, [cout], 0, 0.1);
  };
  const linear = (name: string, c: number) => {
    normal(`${name}.weight`, [c, c], 0, 1 / Math.sqrt(c));
    normal(`${name}.bias`, [c], 0, 0.1);
  };
  // Affine parameters away from (1, 0), so a norm that ignores them is caught.
  const norm = (name: string, c: number) => {
    normal(`${name}.weight`, [c], 1, 0.2);
    normal(`${name}.bias`, [c], 0, 0.2);
  };
  const resnet = (name: string, cin: number, cout: number) => {
    norm(`${name}.norm1`, cin);
    conv(`${name}.conv1`, cout, cin, 3);
    norm(`${name}.norm2`, cout);
    conv(`${name}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${name}.conv_shortcut`, cout, cin, 1);
  };

  const reversed = [...cfg.blockOutChannels].reverse();
  const widest = reversed[0]!;
  conv('post_quant_conv', cfg.latentChannels, cfg.latentChannels, 1);
  conv('decoder.conv_in', widest, cfg.latentChannels, 3);
  resnet('decoder.mid_block.resnets.0', widest, widest);
  if (cfg.midBlockAddAttention) {
    const a = 'decoder.mid_block.attentions.0';
    norm(`${a}.group_norm`, widest);
    for (const p of ['to_q', 'to_k', 'to_v', 'to_out.0']) linear(`${a}.${p}`, widest);
  }
  resnet('decoder.mid_block.resnets.1', widest, widest);
  let prev = widest;
  reversed.forEach((c, i) => {
    for (let j = 0; j <= cfg.layersPerBlock; j++) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : c, c);
    if (i < reversed.length - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, c, c, 3);
    prev = c;
  });
  norm('decoder.conv_norm_out', cfg.blockOutChannels[0]!);
  conv('decoder.conv_out', cfg.outChannels, cfg.blockOutChannels[0]!, 3);
  // A full AutoencoderKL file also holds the encoder, which the decoder must leave alone.
  conv('quant_conv', 2 * cfg.latentChannels, 2 * cfg.latentChannels, 1);
  conv('encoder.conv_in', cfg.blockOutChannels[0]!, 3, 3);
  return ckpt;
}

/** The diffusers config.json of an AutoencoderKL with this config (what vaeConfigFromDiffusers reads). */
export function vaeConfigToDiffusers(cfg: VaeConfig): Record<string, unknown> {
  return {
    _class_name: 'AutoencoderKL', latent_channels: cfg.latentChannels, out_channels: cfg.outChannels, in_channels: cfg.outChannels,
    block_out_channels: cfg.blockOutChannels, layers_per_block: cfg.layersPerBlock, norm_num_groups: cfg.normNumGroups,
    scaling_factor: cfg.scalingFactor, mid_block_add_attention: cfg.midBlockAddAttention,
    up_block_types: cfg.blockOutChannels.map(() => 'UpDecoderBlock2D'), down_block_types: cfg.blockOutChannels.map(() => 'DownEncoderBlock2D'),
  };
}
