"""Plug-ins that put mlx_attn inside the libraries people already run.

One module per library, each imported only when asked for, so `import mlx_attn` never imports
mlx-lm, transformers or diffusers:

- `mlx_attn.integrations.mlx_lm`: `route_mlx_lm()` sends mlx-lm's attention through mlx_attn.
- `mlx_attn.integrations.transformers`: `register()` makes `attn_implementation="mlx_attn"` work.
- `mlx_attn.integrations.diffusers`: `FluxAttnProcessor` for `set_attn_processor`.
"""
