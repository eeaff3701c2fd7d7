#!/bin/sh
# The Debian libraries the build needs, carried to a GPU machine whose image lacks them (this
# workplace's device image has CUDA, PyTorch and transformers, but no Lua, jansson, cmocka,
# OpenBLAS or ncurses/readline dev files, and nothing can be installed there).
#
#   sh tests/gpu/device_env.sh prepare     here, on Debian: download the packages and unpack them
#                                          into .devroot/ (git-ignored; about 48 MB without *.a)
#   . tests/gpu/device_env.sh              there, from the repository root, before make: points
#                                          pkg-config, the linker and the loader at .devroot/
#
# There, build with WARN="-Wall -Wextra": the image's newer gcc warns about readline's old-style
# prototypes, which -Werror would stop on once the headers are not system headers.
# ncursesw and tinfo are linked against the image's own libraries, which it has (only their dev
# files are missing), so that the two always come from the same build.
PF_DEVROOT=$(pwd)/.devroot
if [ "${1:-}" = prepare ]; then
    set -e
    pkgs="liblua5.4-dev liblua5.4-0 libjansson-dev libjansson4 libncurses-dev libreadline-dev libreadline8
          libcmocka-dev libcmocka0 libopenblas-dev libopenblas0-pthread libopenblas-pthread-dev libopenblas0
          libgfortran5"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download $pkgs)
    rm -rf "$PF_DEVROOT"
    for f in "$tmp"/*.deb; do dpkg -x "$f" "$PF_DEVROOT"; done
    rm -rf "$tmp"
    find "$PF_DEVROOT" -name '*.a' -delete
    rm -rf "$PF_DEVROOT/usr/share"
    L=$PF_DEVROOT/usr/lib/x86_64-linux-gnu
    # the dev links that point at /lib (absolute): at the image's own libraries (tinfo, ncursesw)
    # or at the copies here (readline, history)
    ln -sf /lib/x86_64-linux-gnu/libtinfo.so.6 "$L/libtinfo.so"
    printf 'INPUT(/lib/x86_64-linux-gnu/libncursesw.so.6 -ltinfo)\n' > "$L/libncursesw.so"
    for l in readline history; do
        ln -sf "../../../lib/x86_64-linux-gnu/lib$l.so.8" "$L/lib$l.so"
    done
    du -sh "$PF_DEVROOT"
else
    L=$PF_DEVROOT/usr/lib/x86_64-linux-gnu
    for f in "$L"/pkgconfig/*.pc "$L"/openblas-pthread/pkgconfig/*.pc; do
        sed -i "s#^\(prefix\|libdir\|includedir\)=/usr#\1=$PF_DEVROOT/usr#" "$f"
    done
    export PKG_CONFIG_PATH="$L/pkgconfig:$L/openblas-pthread/pkgconfig"
    export LIBRARY_PATH="$L:$PF_DEVROOT/lib/x86_64-linux-gnu:$L/openblas-pthread"
    export LD_LIBRARY_PATH="$LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export C_INCLUDE_PATH="$PF_DEVROOT/usr/include/x86_64-linux-gnu"
fi
