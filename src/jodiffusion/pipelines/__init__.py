"""The trained joint model as one object (``pipeline.py``), the folder it is saved as (``model_folder.py``)
and prompts fed through it in batches (``batching.py``): what training probes, evaluation, generation and
the report all sample with."""
