"""Evaluation of trained runs: ``gdds eval`` (:mod:`.evaluate`) with its reports (:mod:`.reports`),
judges of generated text (:mod:`.judge`, :mod:`.judge_ar`), sample entropies (:mod:`.entropy`), the
papers' own metric (:mod:`.paper_metric`), paired verdicts (:mod:`.paired`) and the multi-run
comparison (:mod:`.compare`)."""
