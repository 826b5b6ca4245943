import { compileSeccomp, deviceModelAllowlist } from '@xen-depriv/privcmd-filter';
import type { SeccompProgram } from './plan.js';

/** privcmd-filter's device-model allow-list, compiled: the filter the launcher installs before exec. */
export function deviceModelSeccomp(): SeccompProgram {
  return {
    profile: 'privcmd-filter/deviceModelAllowlist',
    program: compileSeccomp(deviceModelAllowlist),
  };
}
