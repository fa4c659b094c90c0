"""Deployment: running a model file on images or video, alarms, model cards."""
