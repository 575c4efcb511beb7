from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from panels import views

# The admin has no login form of its own: /admin/login/ sends people to the site's login,
# which is rate limited and asks staff with an authenticator for their second factor.
admin.site.login = login_required(admin.site.login)

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/profile/", views.account, name="account_profile"),
    path("accounts/profile/delete/", views.account_delete, name="account_delete"),
    path("accounts/profile/keys/", views.apikey_create, name="apikey_create"),
    path("accounts/profile/keys/<str:prefix>/revoke/", views.apikey_revoke, name="apikey_revoke"),
    path("accounts/profile/keys/<str:prefix>/limit/", views.apikey_limit, name="apikey_limit"),
    # The two APIs come before the site's pages: a request is matched against the patterns
    # in order, and the site's includes (allauth's alone is dozens) cost each API call a
    # look at every one of them first. No page's pattern starts with api/ or v1/.
    path("api/v1/", include("panels.api_urls")),
    path("v1/", include("openai_api.urls")),
    path("accounts/", include("allauth.urls")),
    path("wallet/", include("wallet.urls")),
    path("", include("chat.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    # The split view serves its start-up script as a file: no inline script for the CSP to refuse.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
    path("admin/", admin.site.urls),
]

# JSON under /api/, the usual pages elsewhere.
handler404 = "panels.api_errors.not_found"
handler500 = "panels.api_errors.server_error"
