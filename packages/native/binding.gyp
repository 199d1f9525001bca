{
  "target_defaults": {
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "cc"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
    "cflags_cc": ["-std=c++17", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"]
  },
  "targets": [{
    "target_name": "vhostd_native",
    "sources": ["<!@(ls -1 cc/*.cc)"],
    "libraries": ["-lpthread"]
  }, {
    "target_name": "vhostd_native_test",
    "sources": ["<!@(ls -1 cc/test_support/*.cc)"]
  }]
}
