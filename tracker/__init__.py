"""Redis-backed conversation timeout tracker."""
