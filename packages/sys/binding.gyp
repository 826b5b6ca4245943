{
  "targets": [
    {
      "target_name": "xen_depriv_sys",
      "sources": ["native/sys.c", "native/spawn.c", "native/pidfd.c", "native/net.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
