import sharp from 'sharp';
import type { CacheBenchRow } from './cache.js';

const COLORS: Record<string, string> = {
  none: '#000', harmonica: '#c62828', ltc: '#1565c0', fora: '#2e7d32', 'delta-dit': '#6a1b9a', teacache: '#795548', 'first-block': '#ad1457', 'fewer-steps': '#616161',
};

interface Panel {
  label: string;
  value: (r: CacheBenchRow) => number | null;
}

/** Quality panels of the frontier plot: fidelity to the uncached images, and class accuracy. */
const PANELS: Panel[] = [
  { label: 'PSNR vs uncached (dB, higher is better)', value: (r) => r.psnr },
  { label: 'accuracy (higher is better)', value: (r) => r.accuracy },
];

/**
 * Quality against measured speedup: every point, and one line per method family through its
 * frontier (the points no faster point of the family beats), so a method is better where its
 * line lies above the others at the same speed. PSNR is
 * clipped below at 10 dB so that a method that wrecks the images does not squash the rest.
 */
export async function frontierPlot(rows: readonly CacheBenchRow[], title: string): Promise<Buffer> {
  const W = 820, PH = 330, m = 64, top = 40;
  const H = top + PANELS.length * PH;
  const speeds = rows.map((r) => r.measuredSpeedup);
  const [x0, x1] = [Math.min(1, ...speeds) * 0.95, Math.max(...speeds) * 1.05];
  const px = (x: number) => m + ((x - x0) / (x1 - x0)) * (W - 2 * m);
  const families = [...new Set(rows.map((r) => r.method))];
  const body = PANELS.map((panel, p) => {
    const y0px = top + p * PH;
    const points = rows.map((r) => ({ r, y: panel.value(r) })).filter((q): q is { r: CacheBenchRow; y: number } => q.y !== null && Number.isFinite(q.y));
    const ys = points.map((q) => q.y);
    const lo = Math.max(Math.min(...ys), p === 0 ? 10 : -Infinity);
    const [y0, y1] = [lo - 0.03 * (Math.max(...ys) - lo || 1), Math.max(...ys) + 0.03 * (Math.max(...ys) - lo || 1)];
    const py = (y: number) => y0px + PH - m / 2 - ((Math.max(y, y0) - y0) / (y1 - y0)) * (PH - m);
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => y0 + f * (y1 - y0));
    const grid = ticks.map((t) => `<line x1="${m}" y1="${py(t)}" x2="${W - m}" y2="${py(t)}" stroke="#ddd"/><text x="${m - 6}" y="${py(t) + 4}" font-size="11" text-anchor="end">${t.toFixed(p === 0 ? 1 : 3)}</text>`).join('');
    const lines = families.map((f) => {
      const pts = points.filter((q) => q.r.method === f).sort((a, b) => a.r.measuredSpeedup - b.r.measuredSpeedup);
      const color = COLORS[f] ?? '#000';
      // The line is the family's frontier: points that no faster point of it beats in quality.
      const front = pts.filter((q, i) => pts.slice(i + 1).every((o) => o.y < q.y));
      const path = front.length > 1 ? `<polyline fill="none" stroke="${color}" stroke-width="1.6" points="${front.map((q) => `${px(q.r.measuredSpeedup)},${py(q.y)}`).join(' ')}"/>` : '';
      return path + pts.map((q) => `<circle cx="${px(q.r.measuredSpeedup)}" cy="${py(q.y)}" r="3.5" fill="${color}"><title>${f} ${q.r.setting}</title></circle>`).join('');
    }).join('');
    return `<text x="${m}" y="${y0px + 10}" font-size="12">${panel.label}</text>${grid}<line x1="${m}" y1="${y0px + PH - m / 2}" x2="${W - m}" y2="${y0px + PH - m / 2}" stroke="#000"/>${lines}`;
  }).join('');
  const legend = families.map((f, i) => `<rect x="${W - m - 130}" y="${top + 18 + i * 15}" width="10" height="10" fill="${COLORS[f] ?? '#000'}"/><text x="${W - m - 115}" y="${top + 27 + i * 15}" font-size="11">${f}</text>`).join('');
  const xticks = Array.from({ length: 6 }, (_, i) => x0 + (i / 5) * (x1 - x0)).map((x) => `<text x="${px(x)}" y="${H - 8}" font-size="11" text-anchor="middle">${x.toFixed(2)}x</text>`).join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + 12}"><rect width="100%" height="100%" fill="#fff"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${title}: quality vs measured speedup</text>
${body}${legend}${xticks}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}
