"""Layer 4: documents for people. Evaluation report, review worklist, plots, Grad-CAM, HTML templates. Imports core and evaluation."""
