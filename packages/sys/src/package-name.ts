/** The npm name of this package, for diagnostics and user agents. */
export const PACKAGE_NAME = '@xen-depriv/sys';
