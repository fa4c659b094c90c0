"""Knowledge distillation: pure loss terms, the loss variants and the distiller."""
