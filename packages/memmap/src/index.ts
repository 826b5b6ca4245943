export {
  type ForeignMapping,
  type ForeignMemory,
  ForeignMemoryError,
  type ForeignMemoryErrorCode,
  InMemoryForeignMemory,
  type InMemoryForeignMemoryOptions,
  PROT_READ,
  PROT_WRITE,
} from './foreign-memory.js';
export {
  MapCache,
  type MapCacheEntryInfo,
  MapCacheError,
  type MapCacheErrorCode,
  type MapCacheOptions,
  type MapCacheStats,
} from './mapcache.js';
export { MemfdForeignMemory, type MemfdForeignMemoryOptions } from './memfd.js';
export { PACKAGE_NAME } from './package-name.js';
export {
  Physmap,
  PhysmapError,
  type PhysmapErrorCode,
  type PhysmapJson,
  type PhysmapLayout,
  type PhysmapRegion,
  physmapXenstorePath,
  type RegionKind,
  type Relocation,
  readPhysmapEntries,
  type Translation,
  XC_PAGE_SIZE,
  type XenstoreEntry,
  type XenstoreReader,
} from './physmap.js';
export {
  PrivcmdForeignMemory,
  type PrivcmdForeignMemoryOptions,
  type PrivcmdMapIo,
} from './privcmd.js';
