"""The request path around the models: the job a request becomes, input images, output
sizes, output files and the safety filter. Nothing here runs a pipeline."""
