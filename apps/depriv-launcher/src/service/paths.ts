/** Where xen-deprivd listens unless told otherwise (the shim's default too). */
export const DEFAULT_SOCKET = '/run/xen-depriv/xen-deprivd.sock';
