import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from teams.models import Membership, TeamRole
from teams.selectors import default_team


class Command(BaseCommand):
    help = (
        "Create an admin user if there is none: from DJANGO_SUPERUSER_USERNAME/PASSWORD/EMAIL, "
        "or 'admin' with a random password printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "")
        user = User.objects.create_superuser(username=username, email=email, password=password)
        Membership.objects.get_or_create(team=default_team(), user=user, defaults={"role": TeamRole.OWNER})
        if "DJANGO_SUPERUSER_PASSWORD" in os.environ:
            self.stdout.write(f"Created admin user {username!r} (password from DJANGO_SUPERUSER_PASSWORD).")
        else:
            self.stdout.write(f"Created admin user {username!r} with password {password!r}: note it now.")
