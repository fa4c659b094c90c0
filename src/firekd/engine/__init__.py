"""The training engine: one epoch loop for teachers, students and fine-tuning."""
