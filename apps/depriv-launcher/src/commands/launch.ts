import { checkHostForConfig, loadConfig } from '../config.js';
import { processOutput } from '../output.js';
import type { RegisterCommand } from './index.js';

export const registerLaunch: RegisterCommand = (program, globals) => {
  program
    .command('launch')
    .description('launch a deprivileged device model from CONFIG (JSON, or xl.cfg keys)')
    .argument('<config>', 'path of the config file (.json, or xl.cfg syntax)')
    .option('--dry-run', 'validate and print what would be done, do nothing')
    .action(async (configPath: string, opts: { dryRun?: boolean }) => {
      const out = processOutput(Boolean(globals().json));
      const config = loadConfig(configPath);
      checkHostForConfig(config);
      if (opts.dryRun) {
        out.line(out.json ? JSON.stringify({ ok: true, config }) : JSON.stringify(config, null, 2));
        return;
      }
      out.line(out.json ? JSON.stringify({ ok: true, config }) : `config ${configPath} is valid`);
    });
};
