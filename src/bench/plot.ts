import sharp from 'sharp';
import type { CacheBenchRow } from './cache.js';

const COLORS: Record<string, string> = {
  none: '#000', harmonica: '#c62828', ltc: '#1565c0', fora: '#2e7d32', 'delta-dit': '#6a1b9a', teacache: '#795548', 'first-block': '#ad1457', 'fewer-steps': '#616161',
};

/**
 * FID-style against measured speedup, one labelled point per method and setting. The axes
 * fit the points within 1.5x the uncached FID, so that a method that wrecks the images
 * (TeaCache at a high threshold) does not squeeze the others into one corner; such points sit
 * on the top edge (and at most at the right edge) with their values in the label.
 */
export async function qualitySpeedPlot(rows: readonly CacheBenchRow[], title: string): Promise<Buffer> {
  const W = 760, H = 500, m = 64;
  const base = rows.find((r) => r.method === 'none')?.fid ?? Math.min(...rows.map((r) => r.fid));
  const fids = rows.map((r) => r.fid);
  const y1 = Math.min(Math.max(...fids) * 1.02, base * 1.5);
  const y0 = Math.min(...fids) * 0.97;
  const onScale = rows.filter((r) => r.fid <= y1);
  const xs = (onScale.length ? onScale : rows).map((r) => r.measuredSpeedup);
  const [x0, x1] = [Math.min(1, ...xs) * 0.95, Math.max(...xs) * 1.08];
  const px = (x: number) => m + ((Math.min(x, x1) - x0) / (x1 - x0)) * (W - 2 * m);
  const py = (y: number) => H - m - ((Math.min(y, y1) - y0) / (y1 - y0)) * (H - 2 * m);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => y0 + f * (y1 - y0));
  const grid = ticks.map((t) => `<line x1="${m}" y1="${py(t)}" x2="${W - m}" y2="${py(t)}" stroke="#ddd"/><text x="${m - 6}" y="${py(t) + 4}" font-size="11" text-anchor="end">${t.toFixed(0)}</text>`).join('');
  const points = rows.map((r, i) => {
    const [x, y] = [px(r.measuredSpeedup), py(r.fid)];
    const label = `${r.method} ${r.setting}${r.fid > y1 ? ` (FID ${r.fid.toFixed(0)}, ${r.measuredSpeedup.toFixed(2)}x: off scale)` : ''}`;
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
${points}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}
