"""Configuration: ``headwater.toml`` into frozen, validated settings."""

from headwater.config.loader import DEFAULT_CONFIG, load_settings, validate_settings
from headwater.config.model import Settings, TopicConfig

__all__ = ["DEFAULT_CONFIG", "Settings", "TopicConfig", "load_settings", "validate_settings"]
