export { type LaunchConfig, launchConfigSchema, loadConfig, validateConfig } from './config.js';
export { CliError, ConfigError } from './errors.js';
export { histogram, percentile, table } from './output.js';
export { PACKAGE_NAME } from './package-name.js';
export { parseXlCfg } from './xlcfg.js';
export { XL_KEYS, xlKeysMarkdown } from './xlkeys.js';
