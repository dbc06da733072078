"""The shared kernel below every layer: settings, errors and metric definitions."""
