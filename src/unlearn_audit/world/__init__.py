"""The tiny fictitious world: TOFU-format data and tiny Llama models with known answers."""

from unlearn_audit.world._build import (
    CANDIDATES,
    FIXTURES_DIR,
    MODEL_NAMES,
    RECIPE,
    REFERENCES,
    SHIPPED_DIR,
    ShippedWorldError,
    build_world,
    default_cache_dir,
    default_models,
    fixtures_dir,
    ship_world,
    shipped_world,
    world_paths,
)

__all__ = ["CANDIDATES", "FIXTURES_DIR", "MODEL_NAMES", "RECIPE", "REFERENCES", "SHIPPED_DIR",
           "ShippedWorldError", "build_world", "default_cache_dir", "default_models", "fixtures_dir",
           "ship_world", "shipped_world", "world_paths"]
