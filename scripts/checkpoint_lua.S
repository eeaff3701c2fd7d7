/* Checkpoints and Hugging Face loading in Lua (scripts/checkpoint.lua), embedded read-only into the .so and the
 * program: pf_lua_checkpoint (the bytes, not NUL-terminated) and pf_lua_checkpoint_len (a uint64_t). */
        .section .rodata
        .balign 16
        .globl  pf_lua_checkpoint
        .hidden pf_lua_checkpoint
        .type   pf_lua_checkpoint, @object
pf_lua_checkpoint:
        .incbin "scripts/checkpoint.lua"
pf_lua_checkpoint_end:
        .size   pf_lua_checkpoint, pf_lua_checkpoint_end - pf_lua_checkpoint

        .balign 8
        .globl  pf_lua_checkpoint_len
        .hidden pf_lua_checkpoint_len
        .type   pf_lua_checkpoint_len, @object
pf_lua_checkpoint_len:
        .quad   pf_lua_checkpoint_end - pf_lua_checkpoint
        .size   pf_lua_checkpoint_len, 8

        .section .note.GNU-stack,"",@progbits
