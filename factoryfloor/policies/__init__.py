"""Policies for the factoryfloor tasks: scripted experts and evaluation."""
