import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

/**
 * The benchmark chart: grouped bars (one group per workload, one bar per system) in two
 * panels, throughput and p99 latency, drawn as SVG and converted to PNG with rsvg-convert
 * (Debian librsvg2-bin): no native Node dependency.
 */
export interface Series {
  name: string;
  color: string;
  /** One value per group; NaN = not measured. */
  values: number[];
}

export interface PanelSpec {
  title: string;
  unit: string;
  groups: string[];
  series: Series[];
  format: (v: number) => string;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function panel(spec: PanelSpec, x: number, y: number, w: number, h: number): string {
  const out: string[] = [];
  const left = 70;
  const top = 30;
  const bottom = 40;
  const pw = w - left - 10;
  const ph = h - top - bottom;
  const all = spec.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const max = niceMax(Math.max(0, ...all));
  out.push(`<text x="${x + w / 2}" y="${y + 18}" font-size="15" font-weight="bold" text-anchor="middle">${esc(spec.title)}</text>`);
  for (let t = 0; t <= 5; t++) {
    const v = (max * t) / 5;
    const yy = y + top + ph - (ph * t) / 5;
    out.push(`<line x1="${x + left}" x2="${x + left + pw}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`);
    out.push(`<text x="${x + left - 6}" y="${yy + 4}" font-size="11" text-anchor="end">${esc(spec.format(v))}</text>`);
  }
  out.push(`<text x="${x + 14}" y="${y + top + ph / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 ${x + 14} ${y + top + ph / 2})">${esc(spec.unit)}</text>`);
  const gw = pw / spec.groups.length;
  const bw = (gw * 0.8) / spec.series.length;
  for (const [g, name] of spec.groups.entries()) {
    const gx = x + left + g * gw + gw * 0.1;
    for (const [s, ser] of spec.series.entries()) {
      const v = ser.values[g]!;
      const bx = gx + s * bw;
      if (!Number.isFinite(v)) {
        out.push(`<text x="${bx + bw / 2}" y="${y + top + ph - 4}" font-size="9" text-anchor="middle" fill="#999">n/a</text>`);
        continue;
      }
      const bh = (ph * v) / max;
      out.push(`<rect x="${bx.toFixed(1)}" y="${(y + top + ph - bh).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${bh.toFixed(1)}" fill="${ser.color}"/>`);
      out.push(
        `<text x="${(bx + bw / 2 - 1).toFixed(1)}" y="${(y + top + ph - bh - 3).toFixed(1)}" font-size="9" text-anchor="middle">${esc(spec.format(v))}</text>`,
      );
    }
    out.push(`<text x="${gx + gw * 0.4}" y="${y + top + ph + 18}" font-size="13" text-anchor="middle">${esc(name)}</text>`);
  }
  out.push(`<line x1="${x + left}" x2="${x + left + pw}" y1="${y + top + ph}" y2="${y + top + ph}" stroke="#333"/>`);
  return out.join('\n');
}

export function renderSvg(title: string, panels: PanelSpec[], legend: Series[]): string {
  const w = 1000;
  const ph = 330;
  const legendH = 26 * Math.ceil(legend.length / 3) + 10;
  const h = 40 + panels.length * ph + legendH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${w / 2}" y="26" font-size="18" font-weight="bold" text-anchor="middle">${esc(title)}</text>`,
  ];
  for (const [i, p] of panels.entries()) parts.push(panel(p, 0, 40 + i * ph, w, ph));
  const ly = 40 + panels.length * ph + 10;
  for (const [i, s] of legend.entries()) {
    const lx = 80 + (i % 3) * 300;
    const yy = ly + Math.floor(i / 3) * 26;
    parts.push(`<rect x="${lx}" y="${yy}" width="16" height="16" fill="${s.color}"/>`);
    parts.push(`<text x="${lx + 22}" y="${yy + 13}" font-size="13">${esc(s.name)}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n');
}

/** Writes the SVG and converts it to PNG. Returns an error message if the PNG could not be made. */
export function writeChart(svg: string, svgPath: string, pngPath: string): string | undefined {
  writeFileSync(svgPath, svg);
  const r = spawnSync('rsvg-convert', ['-f', 'png', '-o', pngPath, svgPath], { encoding: 'utf8' });
  if (r.error !== undefined) return `rsvg-convert: ${r.error.message}`;
  if (r.status !== 0) return `rsvg-convert exited ${String(r.status)}: ${r.stderr}`;
  return undefined;
}
