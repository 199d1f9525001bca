{
  "targets": [{
    "target_name": "vhostd_frontend",
    "sources": ["<!@(ls -1 cc/*.cc)"],
    "include_dirs": [
      "<!(node -p \"require('node-addon-api').include_dir\")",
      "<!(node -p \"require('path').join(require('path').dirname(require.resolve('@vhostd/native/package.json')), 'cc')\")"
    ],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
    "cflags_cc": ["-std=c++17", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
    "libraries": ["-lpthread"]
  }]
}
