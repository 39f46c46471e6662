"""The worker layer: claiming builds from the queue, the worker loop that supervises them, the pipeline a
build goes through (sources, the vendor script in its sandbox or container, the publish) and the runners."""
