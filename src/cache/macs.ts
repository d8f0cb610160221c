import type { Denoiser } from '../models/denoiser.js';

/** MACs of one trajectory per sample, given which slots computed at each step. */
export function trajectoryMacs(model: Pick<Denoiser, 'slots' | 'otherMacs'>, computed: readonly (readonly boolean[])[]): number {
  return computed.reduce((sum, mask) => sum + model.otherMacs + model.slots.reduce((s, slot, i) => s + (mask[i] ? slot.macs : 0), 0), 0);
}

/** Theoretical speedup of a trajectory over computing every slot at every step. */
export function macSpeedup(model: Pick<Denoiser, 'slots' | 'otherMacs'>, computed: readonly (readonly boolean[])[]): number {
  const full = computed.map(() => model.slots.map(() => true));
  return trajectoryMacs(model, full) / trajectoryMacs(model, computed);
}
