#!/usr/bin/env node
// Lists every Xen library function QEMU 7.2 calls, and which of its files call it, from the
// sources scripts/fetch-sources.sh unpacks into .sources/ (git-ignored):
//   node tools/qemu-xen-calls/extract.mjs [--check] [qemu-dir] [xen-dir]
// A library function is a name Xen 4.17's public library headers (tools/include/*.h) declare; a
// call is that name followed by `(` on a line QEMU compiles against Xen 4.17, i.e. with its
// CONFIG_XEN_CTRL_INTERFACE_VERSION compat blocks evaluated for 41700 (dead shims are neither
// calls nor definitions). Only names are read; nothing of either source is copied.
// Writes packages/privcmd-filter/test/vectors/qemu-7.2-xen-calls.json; --check only compares.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
export const OUTPUT = join(
  repo,
  'packages',
  'privcmd-filter',
  'test',
  'vectors',
  'qemu-7.2-xen-calls.json',
);
export const QEMU_DIR = join(repo, '.sources', 'qemu-7.2+dfsg');
/** The Xen tree fetch-sources.sh unpacked (its version suffix changes with Debian uploads). */
export function xenDir() {
  const base = join(repo, '.sources');
  const name = existsSync(base)
    ? readdirSync(base).find((n) => /^xen-4\.17\./.test(n) && statSync(join(base, n)).isDirectory())
    : undefined;
  return name === undefined ? undefined : join(base, name);
}

const XEN_VERSION = 41700;
/** Xen 4.17's public library headers, and the shared library each belongs to. */
const HEADERS = {
  'xencall.h': 'libxencall',
  'xenctrl.h': 'libxenctrl',
  'xenctrl_compat.h': 'libxenctrl',
  'xendevicemodel.h': 'libxendevicemodel',
  'xenevtchn.h': 'libxenevtchn',
  'xenforeignmemory.h': 'libxenforeignmemory',
  'xengnttab.h': 'libxengnttab',
  'xenguest.h': 'libxenguest',
  'xenstore.h': 'libxenstore',
  'xentoolcore.h': 'libxentoolcore',
  'xentoollog.h': 'libxentoollog',
};
// Not part of the QEMU binary: other architectures' user emulation, tests, firmware, the
// configure probe (scripts/xen-detect.c), quilt's copies of unpatched files.
const SKIP = new Set([
  '.pc',
  'debian',
  'roms',
  'subprojects',
  'tests',
  'scripts',
  'docs',
  'python',
]);
const NAME = /\b((?:xc|xs|xtl|xen[a-z]+)_[A-Za-z0-9_]+)\s*\(/g;

/** Comments blanked, newlines kept, so line numbers survive. */
function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, (c) => c.replace(/[^\n]/g, ' '));
}

/**
 * The lines compiled against Xen 4.17 (others are null): `#if CONFIG_XEN_CTRL_INTERFACE_VERSION
 * <op> N` is evaluated; any other conditional counts as compiled, both branches, which can only
 * over-report calls.
 */
export function activeLines(text) {
  const stack = [];
  const active = () => stack.every((s) => s.on);
  return text.split('\n').map((line) => {
    const m = line.match(/^\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)$/);
    if (m === null) return active() ? line : null;
    const [, kw, rest] = m;
    if (kw === 'if' || kw === 'ifdef' || kw === 'ifndef') {
      const v = rest.match(/CONFIG_XEN_CTRL_INTERFACE_VERSION\s*(<=|>=|==|<|>)\s*(\d+)/);
      const n = v === null ? 0 : Number(v[2]);
      const on =
        v === null
          ? true
          : {
              '<': XEN_VERSION < n,
              '>=': XEN_VERSION >= n,
              '>': XEN_VERSION > n,
              '<=': XEN_VERSION <= n,
              '==': XEN_VERSION === n,
            }[v[1]];
      stack.push({ on, known: v !== null });
    } else if (kw === 'else' || kw === 'elif') {
      const top = stack[stack.length - 1];
      if (top?.known) top.on = !top.on;
    } else stack.pop();
    return null;
  });
}

/** Every function name (or function-like macro) the public headers declare, with its library. */
export function libraryFunctions(xen) {
  const out = new Map();
  for (const [h, lib] of Object.entries(HEADERS)) {
    const text = stripComments(readFileSync(join(xen, 'tools', 'include', h), 'utf8'));
    for (const m of text.matchAll(NAME)) if (!out.has(m[1])) out.set(m[1], lib);
  }
  return out;
}

function sourceFiles(qemu) {
  const out = [];
  const walk = (dir) => {
    for (const n of readdirSync(dir)) {
      const p = join(dir, n);
      if (statSync(p).isDirectory()) {
        if (!(dir === qemu && SKIP.has(n))) walk(p);
      } else if (/\.(c|h|inc)$/.test(n)) out.push(p);
    }
  };
  walk(qemu);
  return out.sort();
}

/**
 * Scans one file: the library calls on compiled lines with the QEMU function each sits in, and
 * definitions QEMU gives a library name itself (an active compat shim).
 */
function scanFile(text, lib) {
  const calls = [];
  const shims = [];
  let depth = 0;
  let pending = ''; // text at depth 0 since the last `;` or `}`: holds the next function's name
  let current;
  for (const line of activeLines(stripComments(text))) {
    if (line === null) continue;
    for (const m of line.matchAll(NAME)) {
      if (!lib.has(m[1])) continue;
      if (depth === 0) {
        // At file scope a library name followed by `(` is QEMU defining or declaring it.
        if (/\{\s*$/.test(line) || !/;\s*$/.test(line)) shims.push(m[1]);
        continue;
      }
      calls.push({ name: m[1], in: current });
    }
    for (const ch of line) {
      if (ch === '{') {
        if (depth === 0) current = [...pending.matchAll(/(\w+)\s*\(/g)].pop()?.[1];
        depth++;
      } else if (ch === '}') {
        depth = Math.max(0, depth - 1);
        if (depth === 0) pending = '';
      } else if (depth === 0) {
        pending = ch === ';' ? '' : pending + ch;
      }
    }
    if (depth === 0) pending += '\n';
  }
  return { calls, shims };
}

/**
 * The extracted list: every library function QEMU calls, its library and the files calling it;
 * QEMU's own wrappers in include/hw/xen/ (the compat layer) with the library calls they end in.
 */
export function extract(qemu = QEMU_DIR, xen = xenDir()) {
  if (xen === undefined) throw new Error('no .sources/xen-4.17.* (bash scripts/fetch-sources.sh)');
  const lib = libraryFunctions(xen);
  const files = new Map();
  const wrappers = new Map();
  const shims = new Set();
  for (const p of sourceFiles(qemu)) {
    const text = readFileSync(p, 'utf8');
    if (!/\b(?:xc|xs|xtl|xen[a-z]+)_/.test(text)) continue;
    const file = relative(qemu, p);
    const r = scanFile(text, lib);
    for (const s of r.shims) shims.add(`${s} (${file})`);
    for (const c of r.calls) {
      if (!files.has(c.name)) files.set(c.name, new Set());
      files.get(c.name).add(file);
      if (file.startsWith('include/hw/xen/') && c.in !== undefined) {
        if (!wrappers.has(c.in)) wrappers.set(c.in, new Set());
        wrappers.get(c.in).add(c.name);
      }
    }
  }
  const sorted = (s) => [...s].sort();
  return {
    source: `${relative(join(repo, '.sources'), qemu)} against ${relative(join(repo, '.sources'), xen)} (CONFIG_XEN_CTRL_INTERFACE_VERSION ${XEN_VERSION})`,
    regenerate: 'node tools/qemu-xen-calls/extract.mjs',
    functions: sorted(files.keys()).map((name) => ({
      name,
      library: lib.get(name),
      files: sorted(files.get(name)),
    })),
    wrappers: Object.fromEntries(sorted(wrappers.keys()).map((w) => [w, sorted(wrappers.get(w))])),
    activeShims: sorted(shims),
  };
}

export const serialize = (list) => `${JSON.stringify(list, null, 2)}\n`;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const [qemu = QEMU_DIR, xen = xenDir()] = args.filter((a) => a !== '--check');
  const text = serialize(extract(qemu, xen));
  if (check) {
    const same = existsSync(OUTPUT) && readFileSync(OUTPUT, 'utf8') === text;
    console.log(same ? 'up to date' : `${relative(repo, OUTPUT)} differs from a fresh extraction`);
    process.exit(same ? 0 : 1);
  }
  writeFileSync(OUTPUT, text);
  const n = JSON.parse(text).functions.length;
  console.log(`${n} library functions -> ${relative(repo, OUTPUT)}`);
}
