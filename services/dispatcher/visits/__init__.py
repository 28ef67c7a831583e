"""Field visits (见面处置): officers and grid workers of the task's district meet the citizen and report back."""
