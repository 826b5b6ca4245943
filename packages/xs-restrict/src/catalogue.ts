/**
 * The xenstore keys QEMU 7.2's Xen code touches, and the ones libxl (Xen 4.17)
 * writes for the device model. Data only: the proxy's allowlist and
 * docs/audits/xenstore-keys.md are derived from it (and checked by a test).
 *
 * Patterns are absolute. QEMU runs as a backend in dom0, so its relative
 * paths (`device-model/5/state`, `backend/vkbd/5`) are shown under
 * `/local/domain/0`. Placeholders: `{domid}` the guest's domid (the proxy
 * substitutes its client's), `{type}`/`{devid}`/`{hex}`/`{n}` one path element
 * of the listed shape.
 */

/** What the device model does with a node. `read` covers READ, DIRECTORY(_PART) and GET_PERMS. */
export type CatalogueOp = 'read' | 'write' | 'mkdir' | 'rm' | 'watch' | 'setPerms';

export interface CatalogueEntry {
  /** Stable name, used by allowlist rules and the audit document. */
  readonly id: string;
  readonly pattern: string;
  /** Operations QEMU performs (empty when only the toolstack uses the node). */
  readonly ops: readonly CatalogueOp[];
  /** Who writes the node's value. */
  readonly writtenBy: 'qemu' | 'libxl' | 'guest';
  readonly when: 'startup' | 'runtime' | 'startup+runtime';
  /** The device or feature that needs it. */
  readonly feature: string;
  /** Where QEMU 7.2 / Xen 4.17 touch it (file:function). */
  readonly source: string;
  /** Whether a deprivileged DM still needs the access itself (then the proxy allows `ops`). */
  readonly deprivNeeds: boolean;
  /** How the need is met when the DM no longer has the access. */
  readonly replacement?: string;
  /** The launcher reads it on the DM's behalf before the drop (readBeforeDrop). */
  readonly readBeforeDrop?: boolean;
}

/** Shapes of the placeholders; a placeholder matches exactly one path element. */
export const PLACEHOLDERS: Readonly<Record<string, string>> = {
  domid: '[0-9]+',
  devid: '[0-9]+',
  n: '[0-9]+',
  hex: '[0-9a-f]+',
  type: '[a-z0-9-]+',
};

const DM = '/local/domain/0/device-model/{domid}';
const BE = '/local/domain/0/backend/{type}/{domid}/{devid}';
const FE = '/local/domain/{domid}/device/{type}/{devid}';

export const CATALOGUE: readonly CatalogueEntry[] = [
  // ---- device-model directory (hw/i386/xen/xen-hvm.c, accel/xen/xen-all.c, libxl_dm.c) ----
  {
    id: 'dm-dir',
    pattern: DM,
    ops: [],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'device-model directory',
    source: 'libxl_dm.c:libxl__spawn_local_dm (xs_mkdir)',
    deprivNeeds: false,
    replacement: 'created by the launcher, which grants the guest domid write on it',
  },
  {
    id: 'dm-state',
    pattern: `${DM}/state`,
    ops: ['write'],
    writtenBy: 'qemu',
    when: 'startup+runtime',
    feature: 'startup handshake: libxl waits for "running"',
    source: 'accel/xen/xen-all.c:xenstore_record_dm_state; libxl_dm.c:device_model_spawn',
    deprivNeeds: true,
  },
  {
    id: 'dm-physmap-dir',
    pattern: `${DM}/physmap`,
    ops: ['read'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'HVM physmap (VRAM relocation) restored after migration',
    source: 'hw/i386/xen/xen-hvm.c:xen_read_physmap',
    deprivNeeds: true,
    readBeforeDrop: true,
  },
  {
    id: 'dm-physmap-entry',
    pattern: `${DM}/physmap/{hex}`,
    ops: ['read'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'HVM physmap entry directory',
    source: 'hw/i386/xen/xen-hvm.c:xen_read_physmap',
    deprivNeeds: true,
  },
  {
    id: 'dm-physmap-start-addr',
    pattern: `${DM}/physmap/{hex}/start_addr`,
    ops: ['read', 'write'],
    writtenBy: 'qemu',
    when: 'startup+runtime',
    feature: 'HVM physmap: guest address of a relocated region',
    source: 'hw/i386/xen/xen-hvm.c:xen_save_physmap, xen_read_physmap',
    deprivNeeds: true,
    readBeforeDrop: true,
  },
  {
    id: 'dm-physmap-size',
    pattern: `${DM}/physmap/{hex}/size`,
    ops: ['read', 'write'],
    writtenBy: 'qemu',
    when: 'startup+runtime',
    feature: 'HVM physmap: size of a relocated region',
    source: 'hw/i386/xen/xen-hvm.c:xen_save_physmap, xen_read_physmap',
    deprivNeeds: true,
    readBeforeDrop: true,
  },
  {
    id: 'dm-physmap-name',
    pattern: `${DM}/physmap/{hex}/name`,
    ops: ['read', 'write'],
    writtenBy: 'qemu',
    when: 'startup+runtime',
    feature: 'HVM physmap: memory region name',
    source: 'hw/i386/xen/xen-hvm.c:xen_save_physmap, xen_read_physmap',
    deprivNeeds: true,
    readBeforeDrop: true,
  },
  {
    id: 'dm-backends',
    pattern: `${DM}/backends/{type}`,
    ops: ['mkdir', 'setPerms'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'tells libxl which legacy PV backends QEMU serves (console, vkbd, 9pfs, qusb)',
    source: 'hw/xen/xen-legacy-backend.c:xen_be_register; libxl_dm.c:libxl__qemu_backend_enabled',
    deprivNeeds: false,
    replacement:
      'the launcher writes the list for the QEMU version it starts (SET_PERMS on a dom0-owned node is refused)',
  },
  {
    id: 'dm-disable-pf',
    pattern: `${DM}/disable_pf`,
    ops: [],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'platform PCI device switch, qemu-traditional only',
    source: 'libxl_dm.c:libxl__spawn_local_dm',
    deprivNeeds: false,
    replacement: 'command line (-device xen-platform) for upstream QEMU',
  },
  // ---- the guest's own domain directory ----
  {
    id: 'backend-domid',
    pattern: '/local/domain/0/domid',
    ops: ['read'],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'xen-bus: the backend domid (absent node means dom0)',
    source: 'hw/xen/xen-bus.c:xen_bus_realize',
    deprivNeeds: false,
    replacement: 'the DM runs as a dom0 backend; an unreadable node makes QEMU assume 0',
  },
  {
    id: 'console-type',
    pattern: '/local/domain/{domid}/console/type',
    ops: ['read'],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'primary PV console: which backend serves it (ioemu = QEMU)',
    source: 'hw/char/xen_console.c:con_init',
    deprivNeeds: true,
    readBeforeDrop: true,
  },
  {
    id: 'console-output',
    pattern: '/local/domain/{domid}/console/output',
    ops: ['read'],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'primary PV console: chardev spec',
    source: 'hw/char/xen_console.c:con_init',
    deprivNeeds: true,
    readBeforeDrop: true,
  },
  {
    id: 'console-ring',
    pattern: '/local/domain/{domid}/console/{ring-ref,port,limit}',
    ops: ['read'],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'primary PV console: ring grant, event channel, buffer limit',
    source: 'hw/char/xen_console.c:con_initialise',
    deprivNeeds: true,
  },
  {
    id: 'console-tty',
    pattern: '/local/domain/{domid}/console/tty',
    ops: ['write'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'pty chardev name for xl console',
    source: 'accel/xen/xen-all.c:store_dev_info',
    deprivNeeds: true,
  },
  {
    id: 'device-console-tty',
    pattern: '/local/domain/{domid}/device/console/{devid}/tty',
    ops: ['write'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'pty chardev name of a secondary PV console',
    source: 'accel/xen/xen-all.c:xenstore_store_pv_console_info',
    deprivNeeds: true,
  },
  {
    id: 'hvmloader',
    pattern: '/local/domain/{domid}/hvmloader/{bios,allow-memory-relocate}',
    ops: [],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'firmware settings read by hvmloader in the guest',
    source: 'libxl_dm.c:libxl__spawn_local_dm',
    deprivNeeds: false,
  },
  {
    id: 'image-dm-pid',
    pattern: '/local/domain/{domid}/image/{device-model-pid,device-model-kill-uid}',
    ops: [],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'toolstack bookkeeping of the DM process and its uid',
    source: 'libxl_dm.c:libxl__spawn_local_dm, kill_device_model',
    deprivNeeds: false,
  },
  // ---- backend enumeration (xen-bus and the legacy backend code) ----
  {
    id: 'backend-root',
    pattern: '/local/domain/0/backend',
    ops: ['read'],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'xen-bus: list of backend types',
    source: 'hw/xen/xen-bus.c:xen_bus_enumerate',
    deprivNeeds: false,
    replacement: 'the types QEMU registered are known; xen-bus watches each backend/{type}',
  },
  {
    id: 'backend-type',
    pattern: '/local/domain/0/backend/{type}',
    ops: ['watch'],
    writtenBy: 'libxl',
    when: 'startup+runtime',
    feature: 'xen-bus: enumeration watch per backend type (hot-plug)',
    source: 'hw/xen/xen-bus.c:xen_bus_realize',
    deprivNeeds: true,
  },
  {
    id: 'backend-frontend-dir',
    pattern: '/local/domain/0/backend/{type}/{domid}',
    ops: ['read', 'watch'],
    writtenBy: 'libxl',
    when: 'startup+runtime',
    feature: 'devices of this guest for a backend type (legacy scan and xen-bus enumerate)',
    source: 'hw/xen/xen-legacy-backend.c:xenstore_scan; hw/xen/xen-bus.c:xen_bus_type_enumerate',
    deprivNeeds: true,
  },
  {
    id: 'backend-device',
    pattern: BE,
    ops: ['read', 'mkdir', 'rm'],
    writtenBy: 'libxl',
    when: 'startup+runtime',
    feature: 'one backend device node (xen-bus creates/destroys it when QEMU plugs it)',
    source: 'hw/xen/xen-bus.c:xen_device_backend_create, xen_device_backend_destroy',
    deprivNeeds: true,
  },
  {
    id: 'backend-device-perms',
    pattern: BE,
    ops: ['setPerms'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'xen-bus sets {backend n, frontend r} on a backend node it creates',
    source: 'hw/xen/xen-bus-helper.c:xs_node_create',
    deprivNeeds: false,
    replacement: 'libxl creates backend nodes with these permissions before the DM starts',
  },
  {
    id: 'backend-state',
    pattern: `${BE}/{state,online}`,
    ops: ['read', 'write', 'watch'],
    writtenBy: 'qemu',
    when: 'startup+runtime',
    feature: 'xenbus state machine and online flag of a backend',
    source:
      'hw/xen/xen-bus.c:xen_device_backend_set_state; hw/xen/xen-legacy-backend.c:xen_be_set_state',
    deprivNeeds: true,
  },
  {
    id: 'backend-frontend-link',
    pattern: `${BE}/{frontend,frontend-id,hotplug-status}`,
    ops: ['read', 'write'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'backend-to-frontend link and hot-plug status',
    source: 'hw/xen/xen-bus.c:xen_device_realize; hw/xen/xen-legacy-backend.c:xen_be_try_setup',
    deprivNeeds: true,
  },
  {
    id: 'backend-block-info',
    pattern: `${BE}/{sectors,sector-size,info,feature-flush-cache,feature-discard,discard-granularity,discard-alignment,max-ring-page-order,multi-queue-max-queues}`,
    ops: ['write'],
    writtenBy: 'qemu',
    when: 'startup+runtime',
    feature: 'xen-block (qdisk): disk geometry and features',
    source: 'hw/block/xen-block.c:xen_block_realize, xen_block_resize_cb',
    deprivNeeds: true,
  },
  {
    id: 'backend-nic',
    pattern: `${BE}/{mac,feature-rx-copy,feature-rx-flip}`,
    ops: ['read', 'write'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'legacy xen_nic (qnic) backend',
    source: 'hw/net/xen_nic.c:net_init',
    deprivNeeds: true,
  },
  {
    id: 'backend-vfb',
    pattern: `${BE}/{feature-abs-pointer,feature-raw-pointer,feature-resize,request-update}`,
    ops: ['write'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'legacy xenfb (vfb) and vkbd backends',
    source: 'hw/display/xenfb.c:input_init, fb_initialise',
    deprivNeeds: true,
  },
  {
    id: 'backend-legacy-config',
    pattern: `${BE}/{domain,dev,type,params,mode,handle}`,
    ops: ['write'],
    writtenBy: 'qemu',
    when: 'startup',
    feature: 'xenpv machine: devices configured from the QEMU command line',
    source: 'hw/xen/xen_devconfig.c:xen_config_dev_*',
    deprivNeeds: false,
    replacement: 'libxl writes device configuration; the xenpv machine is not used with libxl',
  },
  // ---- frontend (the guest's side) ----
  {
    id: 'frontend-device',
    pattern: FE,
    ops: ['read', 'mkdir', 'watch'],
    writtenBy: 'libxl',
    when: 'startup+runtime',
    feature: 'frontend directory: existence check, creation by xen-bus, legacy frontend watch',
    source:
      'hw/xen/xen-bus.c:xen_device_frontend_create; hw/xen/xen-legacy-backend.c:xen_be_try_setup',
    deprivNeeds: true,
  },
  {
    id: 'frontend-state',
    pattern: `${FE}/state`,
    ops: ['read', 'write', 'watch'],
    writtenBy: 'guest',
    when: 'startup+runtime',
    feature: 'frontend xenbus state',
    source:
      'hw/xen/xen-bus.c:xen_device_frontend_changed; hw/xen/xen-legacy-backend.c:xen_be_frontend_changed',
    deprivNeeds: true,
  },
  {
    id: 'frontend-link',
    pattern: `${FE}/{backend,backend-id,virtual-device,device-type,protocol}`,
    ops: ['read', 'write'],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'frontend-to-backend link, disk identity, ABI protocol',
    source: 'hw/xen/xen-bus.c:xen_device_realize; hw/block/xen-block.c:xen_block_realize',
    deprivNeeds: true,
  },
  {
    id: 'frontend-rings',
    pattern: `${FE}/{ring-ref,ring-page-order,event-channel,feature-large-sector-size,multi-queue-num-queues,page-ref,tx-ring-ref,rx-ring-ref,request-rx-copy,request-abs-pointer,request-raw-pointer,videoram,feature-update}`,
    ops: ['read'],
    writtenBy: 'guest',
    when: 'runtime',
    feature: 'ring grants, event channels and requested features of PV frontends',
    source: 'hw/block/xen-block.c:xen_block_connect; hw/net/xen_nic.c; hw/display/xenfb.c',
    deprivNeeds: true,
  },
  {
    id: 'frontend-ring-ref-n',
    pattern: `${FE}/ring-ref{n}`,
    ops: ['read'],
    writtenBy: 'guest',
    when: 'runtime',
    feature: 'xen-block: grant of ring page n when ring-page-order > 0',
    source: 'hw/block/xen-block.c:xen_block_connect',
    deprivNeeds: true,
  },
  {
    id: 'frontend-queue',
    pattern: `${FE}/queue-{n}/{ring-ref,ring-page-order,event-channel}`,
    ops: ['read'],
    writtenBy: 'guest',
    when: 'runtime',
    feature: 'xen-block multi-queue: per-queue rings',
    source: 'hw/block/xen-block.c:xen_block_connect',
    deprivNeeds: true,
  },
  // ---- toolstack-only ----
  {
    id: 'libxl-dm-version',
    pattern: '/libxl/{domid}/dm-version',
    ops: [],
    writtenBy: 'libxl',
    when: 'startup',
    feature: 'which device model the toolstack started',
    source: 'libxl_dm.c / libxl_create.c',
    deprivNeeds: false,
  },
];
