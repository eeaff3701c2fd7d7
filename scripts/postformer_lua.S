/* The Lua half of the module (scripts/postformer.lua), embedded read-only into the .so and the
 * program: pf_lua_source (the bytes, not NUL-terminated) and pf_lua_source_len (a uint64_t). */
        .section .rodata
        .balign 16
        .globl  pf_lua_source
        .hidden pf_lua_source
        .type   pf_lua_source, @object
pf_lua_source:
        .incbin "scripts/postformer.lua"
pf_lua_source_end:
        .size   pf_lua_source, pf_lua_source_end - pf_lua_source

        .balign 8
        .globl  pf_lua_source_len
        .hidden pf_lua_source_len
        .type   pf_lua_source_len, @object
pf_lua_source_len:
        .quad   pf_lua_source_end - pf_lua_source
        .size   pf_lua_source_len, 8

        .section .note.GNU-stack,"",@progbits
