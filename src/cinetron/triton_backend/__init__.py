"""The Triton Python-backend models' own package: numpy, onnxruntime and tokenizers only.

``cinetron export`` copies this folder into every Python model's version directory as
``cinetron_backend`` (the Python backend puts that directory on ``sys.path``), and writes
a two-line ``model.py`` that imports its class from there. So the serving image needs
only ``deploy/docker/triton-requirements.txt`` installed, nothing else of the project.

The rest of Cinetron imports this package too (the tokenizer, the session builder and
the decoder's uint8 arithmetic live here once), so its modules use relative imports only
and import nothing of ``cinetron``; ``make lint`` checks it.
"""
