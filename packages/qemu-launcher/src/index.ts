export { PACKAGE_NAME } from './package-name.js';
