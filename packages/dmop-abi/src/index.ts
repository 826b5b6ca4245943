export {
  type DmOp,
  DmOpDecodeError,
  type DmOpResult,
  type DmOpResults,
  decodeDmOp,
  decodeDmOpResult,
  dirtyBitmapSize,
  dmOpBufferSizes,
  type EncodedDmOp,
  encodeDmOp,
  encodeDmOpInto,
  type ModifiedMemoryExtent,
} from './codec.js';
export { DeviceModel, type DmOpTransport, type IoreqServerInfo } from './device-model.js';
export { Errno, errnoName, XenError } from './errors.js';
export * from './layout.js';
export * from './privcmd.js';
