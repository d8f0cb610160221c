import type { Shape } from './ir.js';

/** Shape errors carry the op and the offending shapes so a model bug reads clearly. */
export class ShapeError extends Error {
  readonly code = 'SHAPE_MISMATCH';
}

export function normalizeAxis(axis: number, rank: number, op = 'op'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new ShapeError(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

export function normalizeAxes(axes: readonly number[], rank: number, op = 'op'): number[] {
  return axes.map((a) => normalizeAxis(a, rank, op));
}

/** Numpy-style broadcast of several shapes. */
export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const k = s.length - rank + i;
      const v = k < 0 ? 1 : s[k]!;
      if (v === 1) continue;
      if (d !== 1 && d !== v) throw new ShapeError(`${op}: cannot broadcast ${shapes.map((x) => `[${x}]`).join(' with ')}`);
      d = v;
    }
    out.push(d);
  }
  return out;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Resolves a Reshape target (one -1 allowed, 0 copies the input dimension). */
export function reshapeTarget(input: Shape, target: readonly number[]): number[] {
  const total = input.reduce((a, b) => a * b, 1);
  const out = target.map((d, i) => (d === 0 ? input[i]! : d));
  const known = out.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const free = out.filter((d) => d === -1).length;
  if (free > 1) throw new ShapeError(`Reshape: more than one -1 in [${target}]`);
  if (free === 1) {
    if (known === 0 || total % known !== 0) throw new ShapeError(`Reshape: cannot reshape [${input}] to [${target}]`);
    out[out.indexOf(-1)] = total / known;
  } else if (known !== total) throw new ShapeError(`Reshape: cannot reshape [${input}] (${total} elements) to [${target}]`);
  return out;
}
