export * from './codec.js';
export * from './constants.js';
export * from './parser.js';
export * from './perms.js';
export * from './strings.js';
