import type { Command } from 'commander';

/** Clears XEN_DEPRIV* and sets NO_COLOR, so the defaults the trees print are stable. */
export function stableEnvironment(env?: NodeJS.ProcessEnv): void;
export function roffText(s: string): string;
export function afterHelpText(cmd: Command): string;
export interface PageOptions {
  section: number;
  version: string;
  source: string;
  seeAlso?: string[];
}
export function programManPage(program: Command, options: PageOptions): string;
export function helpTextManPage(text: string, options: PageOptions & { name: string }): string;
export interface CompletionSpec {
  path: string;
  commands: string[];
  options: string[];
  valued: string[];
  fileValued: string[];
  fileArgument: boolean;
}
export function completionSpecs(program: Command): CompletionSpec[];
export function bashCompletion(program: Command, options: { source: string }): string;
/** Every generated file: path relative to the package → content. */
export function renderAll(input: {
  program: Command;
  deprivd: Command;
  shimHelp: string;
  version: string;
}): Record<string, string>;
