#!/usr/bin/env node
import { PACKAGE_NAME } from './package-name.js';

// Skeleton until the reference app lands: it names itself and says what is not there yet.
const [command] = process.argv.slice(2);
if (command === 'demo') {
  console.log(`${PACKAGE_NAME}: the demo is not built yet; \`npm test\` shows what works.`);
  process.exit(0);
}
console.log(`usage: xen-depriv demo`);
process.exit(command === undefined || command === '--help' ? 0 : 2);
