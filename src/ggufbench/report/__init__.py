"""From records to answers: tables, build comparisons, recommendations and their proof, figures, the page."""
