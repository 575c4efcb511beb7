"""What the /v1 API keeps of the site's middleware, on the event loop (panels/asgi.py).

The site's middleware stack is for browsers: sessions, CSRF, login, messages, CSP, frame
options, static files. Under ASGI it runs in a thread made for each request, with a hop
from the event loop into it and back around the view, and a hop back for the response:
about 5 ms of the latency /v1 added before its first token (median, profiled under
load). /v1 is a JSON API authenticated by key on every call, so it needs none of it
except: the request id (RequestIdMiddleware's rules), the body size limit
(RequestSizeLimitMiddleware's, answered in OpenAI's error shape) and SecurityMiddleware's
response headers (and HTTPS redirect), whose work is a few dictionary operations, done
here inline rather than in a thread.
"""

from __future__ import annotations

from django.http import HttpResponse

from openai_api.errors import OpenAIError
from panels.middleware import EdgeMiddleware


class ApiEdgeMiddleware(EdgeMiddleware):
    def too_large(self, message: str) -> HttpResponse:
        return OpenAIError(413, message, code="too_large").response()
