import type { Redis } from 'ioredis';
import type { Keys } from './keys.js';

/** Encoded images as raw bytes under one key each, expiring with the job's result. */
export class ResultStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly ttlS: number,
  ) {}

  async store(jobId: string, images: Buffer[]): Promise<void> {
    const multi = this.redis.multi();
    images.forEach((bytes, i) => multi.set(this.keys.image(jobId, i), bytes, 'EX', this.ttlS));
    await multi.exec();
  }

  /** null when the job has no such image (yet, or any more). */
  image(jobId: string, index: number): Promise<Buffer | null> {
    return this.redis.getBuffer(this.keys.image(jobId, index));
  }
}
