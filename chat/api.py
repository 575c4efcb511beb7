"""HTTP API v1 for chat: the model catalog, conversations, messages and reply streams."""

from __future__ import annotations

import json
from types import SimpleNamespace

from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import renderers, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import export, send_keys, services, streams
from chat.errors import ChatError, TooManyReplies
from chat.markdown import render_markdown
from chat.models import Conversation, Message
from chat.selectors import (
    conversation_cost,
    conversation_messages,
    conversations_for_user,
    get_conversation_for_user,
    get_message_for_user,
    match_snippet,
    messages_running,
    models_catalog,
)
from openai_api.key_spend import KeyInactive, KeyLimitExceeded, acting_as
from panels.api_auth import ApiKeyAuthentication, key_in_memory
from panels.api_errors import ApiError
from panels.ratelimit import ScopedRateLimit
from wallet.errors import InsufficientCredits, WalletFrozen

TOPUP_URL = "/wallet/topup/"


def _api_error(exc: Exception) -> Exception:
    if isinstance(exc, InsufficientCredits):
        return ApiError(
            code="insufficient_credits",
            message=f"Not enough credits for this reply: {exc} Top up your wallet at {TOPUP_URL} to continue.",
            status_code=status.HTTP_402_PAYMENT_REQUIRED,
            extra={"topup_url": TOPUP_URL, "needed": exc.needed, "available": exc.available},
        )
    if isinstance(exc, KeyLimitExceeded):
        return ApiError(
            code="key_limit_exceeded",
            message=f"{exc} Raise the key's limit on the account page, or wait for its period to start again.",
            status_code=status.HTTP_402_PAYMENT_REQUIRED,
            extra={"spent": exc.spent, "left": exc.left, "needed": exc.amount},
        )
    if isinstance(exc, KeyInactive):
        return ApiError(
            code="not_authenticated",
            message="The API key is invalid or has been revoked.",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    if isinstance(exc, WalletFrozen):
        return ApiError(code="wallet_frozen", message=str(exc), status_code=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, TooManyReplies):
        return ApiError(
            code=exc.code,
            message=exc.message,
            status_code=exc.status,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, ChatError):
        return ApiError(code=exc.code, message=exc.message, status_code=exc.status)
    return exc


class ChatApi(APIView):
    # Turns chat and wallet domain errors into the API's error shape.

    def dispatch(self, request, *args, **kwargs):
        # A reply sent with an API key is held under that key's spend limit.
        with acting_as(lambda: getattr(self.request, "auth", None)):
            return super().dispatch(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        return super().handle_exception(_api_error(exc))


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/event-stream` through content negotiation; errors still render as JSON."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(self, data: object, accepted_media_type: str | None = None, renderer_context: dict | None = None):
        return renderers.JSONRenderer().render(data)


# --- output shapes --------------------------------------------------------------


class ErrorOutputSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class MessageOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    conversation = serializers.IntegerField(source="conversation_id")
    role = serializers.ChoiceField(choices=Message.Role.choices)
    status = serializers.ChoiceField(choices=Message.Status.choices)
    content = serializers.CharField(help_text="Plain text as the model wrote it; render it as untrusted Markdown.")
    attachments = serializers.ListField(child=serializers.DictField())
    model = serializers.CharField(source="model.slug", allow_null=True, default=None)
    model_name = serializers.CharField(source="model.name", allow_null=True, default=None)
    requested_model = serializers.CharField()
    routed_by = serializers.CharField()
    input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    usage_estimated = serializers.BooleanField()
    cost = serializers.IntegerField(allow_null=True, help_text="Credits charged for this reply.")
    hold = serializers.IntegerField(source="hold.amount", allow_null=True, default=None)
    error = serializers.SerializerMethodField()
    cancel_requested = serializers.BooleanField()
    retry_of = serializers.IntegerField(source="retry_of_id", allow_null=True)
    escalation_of = serializers.IntegerField(
        source="escalation_of_id",
        allow_null=True,
        help_text='The Auto reply this one re-answers on the flagship ("Ask the flagship").',
    )
    escalatable = serializers.SerializerMethodField(
        help_text="An Auto reply from a cheaper model: POST /api/v1/messages/{id}/escalate re-runs it on the flagship."
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    html = serializers.SerializerMethodField(
        help_text="A settled reply as sanitised HTML (its Markdown rendered on the server); "
        "null for a user message or a reply still streaming."
    )

    @extend_schema_field(ErrorOutputSerializer(allow_null=True))
    def get_error(self, message: Message) -> dict | None:
        if not message.error_code:
            return None
        return {"code": message.error_code, "message": message.error_message}

    @extend_schema_field(serializers.BooleanField())
    def get_escalatable(self, message: Message) -> bool:
        return services.message_escalatable(message)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_html(self, message: Message) -> str | None:
        if message.role != Message.Role.ASSISTANT or message.status == Message.Status.STREAMING:
            return None
        return render_markdown(message.content)

    def to_representation(self, message: Message) -> dict:
        data = super().to_representation(message)
        if message.status == Message.Status.STREAMING:
            data["content"] = streams.partial_text(message)
        return data


class ConversationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    system_prompt = serializers.CharField(help_text="Sent first, as the system message, with every reply.")
    temperature = serializers.DecimalField(
        max_digits=3, decimal_places=2, allow_null=True, help_text="0 to 2; null for the model's default."
    )
    cost = serializers.SerializerMethodField(help_text="Credits its replies were charged, replaced replies included.")
    running = serializers.SerializerMethodField(help_text="A reply is still being written.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(serializers.IntegerField())
    def get_cost(self, conversation: Conversation) -> int:
        total = getattr(conversation, "cost_total", None)
        return total if total is not None else conversation_cost(conversation=conversation)

    @extend_schema_field(serializers.BooleanField())
    def get_running(self, conversation: Conversation) -> bool:
        running = getattr(conversation, "running", None)
        return running if running is not None else messages_running(conversation=conversation)


class ConversationSettingsSerializer(serializers.Serializer):
    system_prompt = serializers.CharField(
        max_length=services.SYSTEM_PROMPT_CHARS, required=False, allow_blank=True, trim_whitespace=False
    )
    temperature = serializers.DecimalField(
        max_digits=3, decimal_places=2, min_value=0, max_value=2, required=False, allow_null=True
    )


class ReplyAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The reply's message id: read it at /api/v1/messages/{id}/stream.")
    status = serializers.ChoiceField(choices=Message.Status.choices)
    model = serializers.CharField(help_text="The model that answers (Auto resolved).")
    hold = serializers.IntegerField(help_text="Credits reserved for the worst case until the reply is settled.")
    routed_by = serializers.CharField()
    conversation = serializers.IntegerField()
    user_message = serializers.IntegerField(help_text="The id of the stored user message.")
    stream_url = serializers.CharField()


def _accepted(reply: Message) -> Response:
    prompt_id = reply.context_ids[-1] if reply.context_ids else None
    data = {
        "id": reply.pk,
        # A reply is accepted queued; a repeat of its Idempotency-Key answers the same 202.
        "status": Message.Status.QUEUED.value,
        "model": reply.model.slug,
        "hold": reply.hold.amount,
        "routed_by": reply.routed_by,
        "conversation": reply.conversation_id,
        "user_message": prompt_id,
        "stream_url": f"/api/v1/messages/{reply.pk}/stream",
    }
    # Already in ReplyAcceptedSerializer's shape (the schema's): passing it through the
    # serializer again would only copy it.
    return Response(data, status=status.HTTP_202_ACCEPTED)


IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="A key of your choosing, unique per message (a UUID). A repeat with the same key returns "
    "the first answer (the same reply, or the same 402) and stores and charges nothing more; the same key "
    "with another request is a 409 idempotency_key_reused.",
)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > send_keys.MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ApiError(
            code="invalid_request",
            message=f"Idempotency-Key must be printable ASCII of at most {send_keys.MAX_KEY_LENGTH} characters.",
        )
    return key


# One server-sent event, as a client's SSE parser hands it over (schemathesis checks each).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": r"^\d+-\d+$", "description": "Send it back as Last-Event-ID."},
        "event": {"type": "string", "enum": ["delta", "done", "error"]},
        "data": {"type": "string", "description": "A JSON object, by event: see the operation's description."},
    },
}

_ERRORS = {
    400: OpenApiResponse(description="Invalid request"),
    404: OpenApiResponse(description="Not found (or not yours)"),
}


# --- models -------------------------------------------------------------------


class ModelListApi(ChatApi):
    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField(source="slug")
        name = serializers.CharField()
        provider = serializers.CharField()
        tier = serializers.CharField()
        input_price = serializers.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M input tokens")
        output_price = serializers.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M output tokens")
        price_label = serializers.CharField()
        context_window = serializers.IntegerField()
        max_output_tokens = serializers.IntegerField()
        image_input = serializers.BooleanField()
        is_demo = serializers.BooleanField()
        available = serializers.BooleanField()
        unavailable_reason = serializers.CharField()

    @extend_schema(
        responses=OutputSerializer(many=True),
        description='The catalog. Send a model\'s `id` as `model`, or "auto" to let Auto pick.',
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(models_catalog(), many=True).data)


# --- conversations --------------------------------------------------------------


class ConversationListApi(ChatApi):
    class OutputSerializer(ConversationOutputSerializer):
        snippet = serializers.CharField(
            required=False, help_text="With `q`: where the text matched, with a little on either side."
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "q", OpenApiTypes.STR, OpenApiParameter.QUERY, required=False, description="Search titles and text."
            )
        ],
        responses=OutputSerializer(many=True),
        description="Newest first. With `q`, only conversations whose title or text contains it (any case).",
    )
    def get(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()[:200]
        conversations = list(conversations_for_user(user=request.user, query=query)[: 200 if query else None])
        data = ConversationOutputSerializer(conversations, many=True).data
        if query:
            for item, conversation in zip(data, conversations, strict=True):
                item["snippet"] = match_snippet(conversation=conversation, query=query)
        return Response(data)


class ConversationCreateApi(ChatApi):
    class InputSerializer(ConversationSettingsSerializer):
        title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: ConversationOutputSerializer, 400: _ERRORS[400]})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = services.conversation_create(user=request.user, **serializer.validated_data)
        return Response(ConversationOutputSerializer(conversation).data, status=status.HTTP_201_CREATED)


# GET lists, POST creates: one URL, so one view joins the two operations.
class ConversationsApi(ConversationListApi, ConversationCreateApi):
    pass


class ConversationDetailApi(ChatApi):
    class OutputSerializer(ConversationOutputSerializer):
        messages = MessageOutputSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer, 404: _ERRORS[404]})
    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = get_conversation_for_user(user=request.user, conversation_id=conversation_id)
        messages = conversation_messages(conversation=conversation).select_related("hold")
        data = ConversationOutputSerializer(conversation).data
        data["messages"] = MessageOutputSerializer(messages, many=True).data
        return Response(data)


class ConversationRenameApi(ChatApi):
    """Rename, and set the system prompt and temperature: each field is optional."""

    class InputSerializer(ConversationSettingsSerializer):
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)

    @extend_schema(request=InputSerializer, responses={200: ConversationOutputSerializer, 404: _ERRORS[404]})
    def patch(self, request: Request, conversation_id: int) -> Response:
        conversation = get_conversation_for_user(user=request.user, conversation_id=conversation_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = services.conversation_update(conversation=conversation, **serializer.validated_data)
        return Response(ConversationOutputSerializer(conversation).data)


class ConversationExportApi(ChatApi):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "as",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=list(export.FORMATS),
                description="markdown or json",
            )
        ],
        responses={
            (200, "text/markdown"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
            404: _ERRORS[404],
        },
        description="The conversation as a file to download: Markdown to read, or JSON with every field.",
    )
    def get(self, request: Request, conversation_id: int) -> HttpResponse:
        conversation = get_conversation_for_user(user=request.user, conversation_id=conversation_id)
        kind = request.query_params.get("as", "markdown")
        if kind not in export.FORMATS:
            raise ApiError(code="invalid_request", message="Export as markdown or json.")
        messages = list(conversation_messages(conversation=conversation))
        cost = conversation_cost(conversation=conversation)
        content_type, extension = export.FORMATS[kind]
        if kind == "json":
            data = export.conversation_json(conversation=conversation, messages=messages, cost=cost)
            body = json.dumps(data, ensure_ascii=False, indent=2)
        else:
            body = export.conversation_markdown(conversation=conversation, messages=messages, cost=cost)
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.export_filename(conversation, extension)}"'
        return response


class ConversationDeleteApi(ChatApi):
    @extend_schema(
        responses={
            204: None,
            404: _ERRORS[404],
            409: OpenApiResponse(description="A reply is still running (reply_in_progress)"),
        }
    )
    def delete(self, request: Request, conversation_id: int) -> Response:
        conversation = get_conversation_for_user(user=request.user, conversation_id=conversation_id)
        services.conversation_delete(conversation=conversation)
        return Response(status=status.HTTP_204_NO_CONTENT)


# GET, PATCH (rename) and DELETE share one URL, so one view joins the three operations.
class ConversationApi(ConversationDetailApi, ConversationRenameApi, ConversationDeleteApi):
    pass


# --- messages -------------------------------------------------------------------

_SEND_ERRORS = {
    400: OpenApiResponse(
        description="Empty content, unknown or unavailable model, image for a text-only model, "
        "message too long for the model"
    ),
    402: OpenApiResponse(description="insufficient_credits: with `topup_url`; nothing was stored"),
    403: OpenApiResponse(description="wallet_frozen"),
    404: _ERRORS[404],
    409: OpenApiResponse(description="idempotency_key_reused: the Idempotency-Key came with another request"),
    429: OpenApiResponse(
        description="rate_limited: too many messages, slow down; too_many_replies: as many replies are already "
        "running as a user may have (MAX_REPLIES_IN_FLIGHT_PER_USER), wait for one to finish; nothing was stored"
    ),
    503: OpenApiResponse(description="service_unavailable: the reply could not be queued; nothing was charged"),
}


class MessageSendApi(ChatApi):
    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    api_key_cache = True  # the key as verified within API_CACHE_SECONDS (panels/api_auth.py)
    throttle_classes = [ScopedRateLimit]
    throttle_scope = "send"

    class InputSerializer(serializers.Serializer):
        content = serializers.CharField(trim_whitespace=False, allow_blank=True)
        model = serializers.CharField(max_length=60, help_text='A model id from /api/v1/models, or "auto".')
        attachments = serializers.ListField(
            child=serializers.JSONField(),
            required=False,
            default=list,
            help_text='Images: `{"type": "image", "url": "data:image/png;base64,..."}` (or an https URL); '
            "only for models with image input.",
        )

    _fields: dict | None = None

    @classmethod
    def _validated(cls, data: object) -> dict:
        """The body as InputSerializer validates it. The common body (`content` and `model`
        as strings, no attachments) is run through the serializer's own two fields without
        building a serializer (DRF copies its declared fields for each instance: about a
        quarter of a millisecond of the send); anything else, and anything those fields
        refuse, goes through the serializer, so its answers and error shapes are unchanged."""
        if type(data) is dict and "attachments" not in data:
            content, model = data.get("content"), data.get("model")
            if type(content) is str and type(model) is str:
                if cls._fields is None:
                    cls._fields = cls.InputSerializer().fields
                try:
                    return {
                        "content": cls._fields["content"].run_validation(content),
                        "model": cls._fields["model"].run_validation(model),
                        "attachments": [],
                    }
                except serializers.ValidationError:
                    pass
        serializer = cls.InputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(
        request=InputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={202: ReplyAcceptedSerializer, **_SEND_ERRORS},
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        # Another user's (or no) conversation is a 404 before anything else is said. On the
        # common send (no Idempotency-Key, a named model) the send's own lock of the
        # conversation, which matches its owner, is that check: one statement fewer; any
        # refusal then looks the conversation up first, so the answers stay as they were.
        looked_up = None
        try:
            key = _idempotency_key(request)
            data = self._validated(request.data)
            if key or data["model"] == services.AUTO:
                # A repeated key answers from its record, and Auto reads the history, before the lock.
                looked_up = get_conversation_for_user(user=request.user, conversation_id=conversation_id)
            conversation = looked_up or Conversation(pk=conversation_id, user=request.user)
            reply = services.message_send(user=request.user, conversation=conversation, idempotency_key=key, **data)
        except Exception:
            if looked_up is None:
                get_conversation_for_user(user=request.user, conversation_id=conversation_id)
            raise
        streams.remember_accepted(reply, user_id=request.user.pk)  # for its first reader's set-up
        return _accepted(reply)


class MessageDetailApi(ChatApi):
    @extend_schema(responses={200: MessageOutputSerializer, 404: _ERRORS[404]})
    def get(self, request: Request, message_id: int) -> Response:
        message = get_message_for_user(user=request.user, message_id=message_id)
        return Response(MessageOutputSerializer(message).data)


class MessageStreamApi(ChatApi):
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]
    # Reading a reply spends nothing: the key as verified within API_CACHE_SECONDS in this
    # process will do, as for the sends (a revoked key reads no more after that time).
    api_key_cache = True

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        # An error is JSON, whatever the reader asked for.
        self.request.accepted_renderer = renderers.JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return response

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=False,
                description="Resume after this event id (browsers send it when they reconnect).",
            ),
            OpenApiParameter(
                "last_event_id",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                required=False,
                description="The same as the Last-Event-ID header, for clients that cannot set headers.",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=SSE_EVENT_SCHEMA,
                description="Server-sent events, each with an `id:`. `delta` {text}: the next piece of the reply; "
                "`done` {status, usage {input_tokens, output_tokens, estimated}, cost, balance, available, "
                "model, warning}: the reply ended (done or cancelled) and was paid for; `error` {code, message}: "
                "it failed and nothing was charged. The stream ends after `done` or `error`; comment lines keep "
                "it alive while waiting.",
            ),
            400: _ERRORS[400],
            404: _ERRORS[404],
        },
    )
    def get(self, request: Request, message_id: int) -> StreamingHttpResponse:
        message = streams.message_for_reader(user_id=request.user.pk, message_id=message_id)
        if message is None:
            raise Http404("No such message.")
        if message.role != Message.Role.ASSISTANT:
            raise ApiError(code="not_a_reply", message="Only a reply has a stream.")
        after = request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id") or "0-0"
        if not streams.valid_event_id(after):
            raise ApiError(code="invalid_request", message="Last-Event-ID is not an event id of this stream.")
        if isinstance(request._request, ASGIRequest):
            events = streams.sse_events_async(message, after=after)
        else:
            events = streams.sse_events(message, after=after)
        return _event_stream(events)

    @classmethod
    def respond_on_loop(cls, request: HttpRequest, message_id: int) -> StreamingHttpResponse | None:
        """The common request, answered on the event loop with no thread and no database
        (panels/asgi.py: ApiASGIHandler): the first reader, with a key this process verified
        within API_CACHE_SECONDS (`key_in_memory`: no `last_used_at` write due), of a reply
        this process has just accepted for the key's user (`streams.accepted_for_reader`). The
        same response as `get` gives, with DRF's headers; None: `get` answers (any other
        case, every error included)."""
        if request.method != "GET" or "HTTP_LAST_EVENT_ID" in request.META or "last_event_id" in request.GET:
            return None
        try:  # content negotiation as DRF's: what it refuses (a 406, an unknown `format`), the view answers
            cls.content_negotiation_class().select_renderer(
                SimpleNamespace(query_params=request.GET, headers=request.headers, META=request.META),
                [renderer() for renderer in cls.renderer_classes],
            )
        except Exception:
            return None
        api_key = key_in_memory(request)
        if api_key is None:
            return None
        message = streams.accepted_for_reader(user_id=api_key.user_id, message_id=message_id)
        if message is None:
            return None
        response = _event_stream(streams.sse_events_async(message))
        for name, value in _STREAM_VIEW_HEADERS.items():  # what DRF's finalize_response adds
            response[name] = value
        return response


def _event_stream(events) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    # Tells nginx-style proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


def _view_headers(view_class: type[APIView]) -> dict[str, str]:
    view = view_class()
    view.setup(HttpRequest())  # as as_view() does (a GET view answers HEAD too)
    return view.default_response_headers


_STREAM_VIEW_HEADERS = _view_headers(MessageStreamApi)


class MessageCancelApi(ChatApi):
    @extend_schema(
        request=None,
        responses={
            200: MessageOutputSerializer,
            404: _ERRORS[404],
            409: OpenApiResponse(description="Not a reply"),
            503: OpenApiResponse(description="service_unavailable"),
        },
        description="Stop a reply. A queued reply ends cancelled at no charge; a streaming one stops within a "
        "few chunks and is charged for what was generated (its `done` event says what). Cancelling a finished "
        "reply changes nothing.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = get_message_for_user(user=request.user, message_id=message_id)
        message = services.message_cancel(message=message)
        return Response(MessageOutputSerializer(message).data)


class MessageRetryApi(ChatApi):
    throttle_classes = [ScopedRateLimit]
    throttle_scope = "send"

    @extend_schema(
        request=None,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={
            202: ReplyAcceptedSerializer,
            **_SEND_ERRORS,
            409: OpenApiResponse(
                description="not_retryable: only the latest reply, when it failed; idempotency_key_reused"
            ),
        },
        description="Answer the conversation again in place of a failed reply: a new reply (with `retry_of`) "
        "and a new hold.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = get_message_for_user(user=request.user, message_id=message_id)
        key = _idempotency_key(request)
        return _accepted(services.message_retry(user=request.user, message=message, idempotency_key=key))


class MessageEscalateApi(ChatApi):
    throttle_classes = [ScopedRateLimit]
    throttle_scope = "send"

    @extend_schema(
        request=None,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={
            200: ReplyAcceptedSerializer,
            202: ReplyAcceptedSerializer,
            **_SEND_ERRORS,
            409: OpenApiResponse(
                description="not_escalatable: only a finished Auto reply from a cheaper model; idempotency_key_reused"
            ),
        },
        description='"Ask the flagship": re-run the message an Auto reply answered on the flagship tier, as a second '
        "answer (a new reply with `escalation_of`) with its own hold. 202 when it starts; 200 with the same reply "
        "when this Auto reply was already escalated.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = get_message_for_user(user=request.user, message_id=message_id)
        key = _idempotency_key(request)
        reply, created = services.message_escalate(user=request.user, message=message, idempotency_key=key)
        response = _accepted(reply)
        if not created:
            response.status_code = status.HTTP_200_OK
        return response
