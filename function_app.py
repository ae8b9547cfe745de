"""Azure Functions entry point (Python v2 programming model).

Kept deliberately thin: each function hands the raw request or message to the relay and
maps the answer back. Nothing here touches the network or reads settings at import time.
"""

import azure.functions as func

from relay.names import RETRY_QUEUE_NAME

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# Every method is bound so a wrong one gets the relay's JSON 405 (with Allow: POST) instead of
# the host's bare 404. ANONYMOUS: the HMAC signature is the authentication (see README).
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@app.function_name("MLflowWebHookTransition")
@app.route(route="MLflowWebHookTransition", methods=_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
def mlflow_webhook_transition(req: func.HttpRequest) -> func.HttpResponse:
    """Verify, route and relay one registry webhook delivery."""
    from relay import functions_adapter  # imported on first use: keeps indexing (cold start) cheap

    return functions_adapter.handle_http(req)


@app.function_name("RetryPipelineRun")
@app.queue_trigger(arg_name="msg", queue_name=RETRY_QUEUE_NAME, connection="AzureWebJobsStorage")
def retry_pipeline_run(msg: func.QueueMessage) -> None:
    """Start a pipeline run that Azure DevOps could not take during the original request."""
    from relay import functions_adapter

    functions_adapter.handle_retry_message(msg)


# Always registered: a timer binding cannot be added conditionally, and an unresolved
# %CATCH_UP_SCHEDULE% stops the function from loading, so infra/ always sets the schedule.
# Off unless CATCH_UP_REGISTRIES names a registry (then a no-op with one INFO line).
@app.function_name("CatchUpMissedEvents")
@app.timer_trigger(arg_name="timer", schedule="%CATCH_UP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def catch_up_missed_events(timer: func.TimerRequest) -> None:
    """Start, once, the stage and alias moves whose webhook never arrived."""
    from relay import catch_up_runner

    catch_up_runner.handle_timer(timer)
