"""Project scaffolding: ``mloop init`` templates (fraud, classification, regression)."""

from mloop.project.init import TEMPLATES, init_project, project_name

__all__ = ["TEMPLATES", "init_project", "project_name"]
