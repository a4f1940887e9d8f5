"""What a finished search found, made readable: plots, per-plugin credit, diagrams, Grad-CAM, reports.

The pieces, each usable alone:

* :mod:`~searchcore.report.collect` reads a search back from its study storage (and MLflow);
* :mod:`~searchcore.report.credit` estimates what each plugin did to accuracy and cost;
* :mod:`~searchcore.report.plots` draws the search (PNG with matplotlib, HTML with plotly);
* :mod:`~searchcore.report.diagram` draws the winning architecture and who changed what;
* :mod:`~searchcore.report.gradcam` shows what the winning model looks at;
* :mod:`~searchcore.report.html` writes the one-file, offline report;
* :mod:`~searchcore.report.ablate` measures each improvement for real by retraining without it;
* :mod:`~searchcore.report.hook` is what ``run_search`` calls at the end of every search.

Nothing here is imported by ``import searchcore``: matplotlib and plotly are optional
(``pip install searchcore[report]``) and a search must run without them.
"""

from __future__ import annotations

__all__ = ["ablate", "collect", "credit", "diagram", "gradcam", "hook", "html", "links", "plots"]
