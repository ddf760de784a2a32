"""Real cross-view datasets (SeqGeo, CVUSA, VIGOR) converted into the geoloc dataset layout."""
