"""Subscriptions and notifications of the reference Agent (TR-369 "Notifications and
Subscription Mechanism"; TR-181 ``Device.LocalAgent.Subscription.{i}.``).

* :mod:`.engine`: :class:`NotificationEngine`, the ``Notifications`` service
  handlers call and the store listener that turns changes into Notify Msgs;
* :mod:`.model`: typed snapshots of Subscription and Controller rows;
* :mod:`.matching`: ReferenceList matching per NotifType;
* :mod:`.timing`: the R-NOT.1 retry back-off and the Periodic! phase;
* :mod:`.build`: Notify Msg builders, unique keys, Boot! ParameterMap;
* :mod:`.trigger`: TriggerAction Config (TriggerConfigSettings).
"""

from __future__ import annotations

from conformance.agent.notify.engine import NotificationEngine, PendingNotify

__all__ = ["NotificationEngine", "PendingNotify"]
