import sharp from 'sharp';
import type { CacheBenchRow } from './cache.js';

const COLORS: Record<string, string> = {
  none: '#000', harmonica: '#c62828', ltc: '#1565c0', fora: '#2e7d32', 'delta-dit': '#6a1b9a', teacache: '#795548', 'first-block': '#ad1457', 'fewer-steps': '#616161',
};

/**
 * FID-style against measured speedup, one labelled point per method and setting. The FID
 * axis stops at 2.5x the uncached FID, so that a method that wrecks the images (TeaCache at
 * a high threshold) does not squeeze the others into one line; such points sit on the top
 * edge with their value in the label.
 */
export async function qualitySpeedPlot(rows: readonly CacheBenchRow[], title: string): Promise<Buffer> {
  const W = 760, H = 500, m = 64;
  const xs = rows.map((r) => r.measuredSpeedup);
  const base = rows.find((r) => r.method === 'none')?.fid ?? Math.max(...rows.map((r) => r.fid));
  const [x0, x1] = [Math.min(1, ...xs) * 0.95, Math.max(...xs) * 1.05];
  const y1 = Math.min(Math.max(...rows.map((r) => r.fid)) * 1.05, base * 2.5);
  const px = (x: number) => m + ((x - x0) / (x1 - x0)) * (W - 2 * m);
  const py = (y: number) => H - m - (Math.min(y, y1) / y1) * (H - 2 * m);
  const ticks = [0.25, 0.5, 0.75, 1].map((f) => f * y1);
  const grid = ticks.map((t) => `<line x1="${m}" y1="${py(t)}" x2="${W - m}" y2="${py(t)}" stroke="#ddd"/><text x="${m - 6}" y="${py(t) + 4}" font-size="11" text-anchor="end">${t.toFixed(0)}</text>`).join('');
  const points = rows.map((r, i) => {
    const [x, y] = [px(r.measuredSpeedup), py(r.fid)];
    const label = `${r.method} ${r.setting}${r.fid > y1 ? ` (FID ${r.fid.toFixed(0)}, off scale)` : ''}`;
    // Alternate label sides to keep neighbours apart.
    const dy = i % 2 === 0 ? -7 : 15;
    // Points near the right edge get their label on the left.
    const [tx, anchor] = x > W - 260 ? [x - 7, 'end'] : [x + 7, 'start'];
    return `<circle cx="${x}" cy="${y}" r="5" fill="${COLORS[r.method] ?? '#000'}"/><text x="${tx}" y="${y + dy}" font-size="10.5" text-anchor="${anchor}" fill="${COLORS[r.method] ?? '#000'}">${label}</text>`;
  }).join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"><rect width="100%" height="100%" fill="#fff"/>
<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${title}</text>
${grid}
<line x1="${m}" y1="${H - m}" x2="${W - m}" y2="${H - m}" stroke="#000"/><line x1="${m}" y1="${m}" x2="${m}" y2="${H - m}" stroke="#000"/>
<text x="${W / 2}" y="${H - 18}" text-anchor="middle" font-size="13">measured speedup (x), median of interleaved runs</text>
<text x="18" y="${H / 2}" text-anchor="middle" font-size="13" transform="rotate(-90 18 ${H / 2})">FID-style (lower is better)</text>
<text x="${m}" y="${H - m + 16}" font-size="11">${x0.toFixed(2)}</text><text x="${W - m}" y="${H - m + 16}" font-size="11" text-anchor="end">${x1.toFixed(2)}</text>
<text x="${m - 6}" y="${H - m}" font-size="11" text-anchor="end">0</text>
${points}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}
