import { Engine, type GenerateOptions, type GenerateRequest, type GenerateResult } from '../src/engine/engine.js';
import type { SessionConfig } from '../src/onnx/session.js';
import type { ModelCatalog } from '../src/service/catalog.js';

/** What the processor needs of an engine (tests wrap it to slow steps down). */
export interface GenerateEngine {
  generate(request: GenerateRequest, options?: GenerateOptions): Promise<GenerateResult>;
}

export interface EngineSource {
  get(model: string): Promise<GenerateEngine>;
}

/**
 * Opens each model once, on its first job, and keeps its sessions warm for the next ones. A
 * failed open is forgotten so that a later job can try again.
 */
export class EnginePool implements EngineSource {
  private readonly engines = new Map<string, Promise<Engine>>();

  constructor(
    private readonly catalog: ModelCatalog,
    private readonly session: SessionConfig = {},
  ) {}

  get(model: string): Promise<Engine> {
    let engine = this.engines.get(model);
    if (!engine) {
      engine = Engine.open(this.catalog.get(model).dir, this.session);
      engine.catch(() => this.engines.delete(model));
      this.engines.set(model, engine);
    }
    return engine;
  }
}
