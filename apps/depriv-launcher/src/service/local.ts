import type { LaunchConfig } from '../config.js';
import { DmEngine, defaultSettings, type EngineSettings, type LaunchRequest } from './engine.js';

/** The engine settings the CLI runs in process with, when no service listens. */
export function settingsForConfig(
  config: Pick<LaunchConfig, 'stateDir'> & Partial<Pick<LaunchConfig, 'user'>>,
): EngineSettings {
  return defaultSettings({
    stateDir: config.stateDir,
    ...(config.user ? { user: config.user } : {}),
  });
}

/** The CLI's engine: the service's code, in this process. */
export function openEngine(
  settings: EngineSettings,
  options: { recover?: boolean; readOnly?: boolean } = {},
): Promise<DmEngine> {
  return DmEngine.open(settings, options);
}

/** A validated launch config as the engine's request. */
export function requestOf(config: LaunchConfig): LaunchRequest {
  return {
    kind: 'config',
    domid: config.domid,
    name: config.name,
    mode: config.mode,
    target: config.target,
    qemu: config.qemu,
    user: config.user,
    guest: config.guest,
  };
}
