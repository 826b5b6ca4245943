// Rewrites the README's xl.cfg key table from src/xlkeys.ts (through the built dist/index.js).
import { readFileSync, writeFileSync } from 'node:fs';
import { xlKeysMarkdown } from '../dist/index.js';

const path = new URL('../README.md', import.meta.url);
const text = readFileSync(path, 'utf8');
const start = text.indexOf('<!-- xl-keys:start');
const end = text.indexOf('<!-- xl-keys:end -->');
const head = text.slice(0, text.indexOf('\n', start) + 1);
writeFileSync(path, `${head}${xlKeysMarkdown()}\n${text.slice(end)}`);
