/**
 * Steps x sublayers grids on a canvas: the live cache decisions of a job and a router's
 * logits. Rows are steps (1 at the top), columns the sublayers grouped by block. The same
 * numbers are also written to tables on the page for screen readers.
 */

export interface Cell {
  fill: string;
  /** A centre dot in this colour (router decisions). */
  dot?: string;
}

export interface GridSpec {
  sublayers: readonly string[];
  rows: number;
  /** null: no data yet (an empty outline). */
  cell(row: number, col: number): Cell | null;
  /** Side of a cell in CSS pixels (default: larger for models with few sublayers). */
  cellSize?: number;
  /** Right of each row: a bar (fraction of the widest) and a label, e.g. milliseconds per step. */
  note?(row: number): { bar: number; text: string } | null;
}

const GAP = 1;
const LEFT = 34;
const TOP = 32;
const NOTE_WIDTH = 120;
const INK = '#1a1a1a';
const EMPTY = '#c9ccd1';

/** "blocks.3.attn" -> block 3, "A"; anything else is its own group. */
export function sublayerLabel(name: string): { block: string; kind: string } {
  const m = /^blocks\.(\d+)\.(\w+)$/.exec(name);
  if (!m) return { block: name, kind: name.slice(0, 1).toUpperCase() };
  const kind = m[2] === 'attn' ? 'A' : m[2] === 'cross' ? 'C' : m[2] === 'mlp' ? 'M' : m[2]!.slice(0, 1).toUpperCase();
  return { block: m[1]!, kind };
}

/** A colour variable of the page's stylesheet, so the canvas and the legend agree. */
export function cssColor(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

export function drawGrid(canvas: HTMLCanvasElement, spec: GridSpec): void {
  const cols = spec.sublayers.length;
  const size = spec.cellSize ?? (cols <= 24 ? 18 : 12);
  const width = LEFT + cols * (size + GAP) + (spec.note ? NOTE_WIDTH : 8);
  const height = TOP + Math.max(1, spec.rows) * (size + GAP) + 4;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = '10px system-ui, "DejaVu Sans", sans-serif';
  ctx.fillStyle = INK;
  ctx.textBaseline = 'middle';

  // Column heads: block numbers over their sublayers, then one letter per sublayer.
  const labels = spec.sublayers.map(sublayerLabel);
  ctx.textAlign = 'center';
  ctx.fillText('block', LEFT / 2, 8);
  let start = 0;
  for (let c = 1; c <= cols; c++) {
    if (c < cols && labels[c]!.block === labels[start]!.block) continue;
    const x0 = LEFT + start * (size + GAP);
    const x1 = LEFT + c * (size + GAP) - GAP;
    ctx.fillText(labels[start]!.block, (x0 + x1) / 2, 8);
    ctx.fillRect(x0, 15, x1 - x0, 1);
    start = c;
  }
  labels.forEach((l, c) => ctx.fillText(l.kind, LEFT + c * (size + GAP) + size / 2, 23));

  const every = spec.rows <= 30 ? 1 : 5;
  ctx.textAlign = 'right';
  for (let r = 0; r < spec.rows; r++) {
    const y = TOP + r * (size + GAP);
    if ((r + 1) % every === 0 || r === 0) {
      ctx.fillStyle = INK;
      ctx.fillText(String(r + 1), LEFT - 6, y + size / 2);
    }
    for (let c = 0; c < cols; c++) {
      const x = LEFT + c * (size + GAP);
      const cell = spec.cell(r, c);
      if (!cell) {
        ctx.strokeStyle = EMPTY;
        ctx.strokeRect(x + 0.5, y + 0.5, size - 1, size - 1);
        continue;
      }
      ctx.fillStyle = cell.fill;
      ctx.fillRect(x, y, size, size);
      if (cell.dot) {
        ctx.fillStyle = cell.dot;
        ctx.beginPath();
        ctx.arc(x + size / 2, y + size / 2, 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    const note = spec.note?.(r);
    if (note) {
      const x = LEFT + cols * (size + GAP) + 6;
      ctx.fillStyle = '#6b6f76';
      ctx.fillRect(x, y + 3, Math.max(1, note.bar * (NOTE_WIDTH - 60)), size - 6);
      ctx.fillStyle = INK;
      ctx.textAlign = 'left';
      ctx.fillText(note.text, x + NOTE_WIDTH - 56, y + size / 2);
      ctx.textAlign = 'right';
    }
  }
  ctx.textAlign = 'left';
  ctx.save();
  ctx.translate(8, TOP + (spec.rows * (size + GAP)) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = 'center';
  ctx.fillStyle = INK;
  ctx.fillText('step', 0, 0);
  ctx.restore();
}

/** Linear interpolation between two #rrggbb colours. */
export function mix(from: string, to: string, t: number): string {
  const parse = (hex: string) => [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));
  const a = parse(from);
  const b = parse(to);
  const clamped = Math.min(1, Math.max(0, t));
  return `#${a.map((v, i) => Math.round(v + (b[i]! - v) * clamped).toString(16).padStart(2, '0')).join('')}`;
}
