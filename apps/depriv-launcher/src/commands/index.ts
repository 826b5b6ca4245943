import type { Command } from 'commander';
import { registerAudit } from './audit.js';
import { registerDemo } from './demo.js';
import { registerLaunch } from './launch.js';
import { registerStorm } from './storm.js';
import { registerXenstored } from './xenstored.js';

export interface GlobalOptions {
  json?: boolean;
  debug?: boolean;
  logJson?: boolean;
}

/** Each command registers itself on the program; `globals()` reads the global flags. */
export type RegisterCommand = (program: Command, globals: () => GlobalOptions) => void;

export const commands: readonly RegisterCommand[] = [
  registerDemo,
  registerLaunch,
  registerStorm,
  registerAudit,
  registerXenstored,
];
